"""Offline image data: photos and faces that PyPI and Debian packages ship; nothing downloads.

- :func:`natural_frames`: random crops of natural photos (the unlabeled "YouTube frames").
"""

from .natural import natural_frames, natural_photos

__all__ = ["natural_frames", "natural_photos"]
