"""The book's quick/full switch: chapters pick their sizes through :func:`pick`, nothing else.

A chapter runs in *quick* mode by default (small sizes, so the whole book executes in CI in a
few minutes) and in *full* mode when the environment variable ``CATNEURON_BOOK_MODE=full`` is
set (bigger sizes, closer to the paper)::

    from catneuron.book import pick
    n_frames = pick(quick=64, full=2_000)

``make test`` runs the chapters in quick mode; ``CATNEURON_BOOK_MODE=full make book-html``
renders them in full mode.
"""

from __future__ import annotations

import os
from typing import TypeVar

ENV_VAR = "CATNEURON_BOOK_MODE"
MODES = ("quick", "full")

T = TypeVar("T")


def mode() -> str:
    """The current mode, ``"quick"`` (the default) or ``"full"``, read from ``CATNEURON_BOOK_MODE``."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "quick"
    if value not in MODES:
        raise ValueError(f"{ENV_VAR} must be one of {MODES} (or unset for quick), got {value!r}")
    return value


def pick(*, quick: T, full: T) -> T:
    """The ``quick`` value in quick mode, the ``full`` value in full mode."""
    return full if mode() == "full" else quick
