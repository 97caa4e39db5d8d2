"""A cache of built datasets: one ``.npz`` per (dataset, parameters, sources), with a content hash.

The file name carries a hash of the *recipe* (dataset name, every parameter including the seed,
the sources in use, and :data:`DATA_VERSION`); the file holds the arrays plus a SHA-256 of their
*content*, checked on every load, so a truncated or edited file is rebuilt, never trusted.
The directory is ``$CATNEURON_CACHE`` if set, else ``~/.cache/catneuron``; tests pass their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

DATA_VERSION = 1  # bump when a generator changes, so old cache files are not reused


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """``path``, else ``$CATNEURON_CACHE``, else ``~/.cache/catneuron`` (its ``data`` subfolder)."""
    if path is not None:
        return Path(path)
    root = os.environ.get("CATNEURON_CACHE") or os.path.join(Path.home(), ".cache", "catneuron")
    return Path(root) / "data"


def content_hash(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def recipe_key(name: str, params: dict) -> str:
    """Short hash of the recipe: the dataset name, its parameters and DATA_VERSION."""
    text = json.dumps({"dataset": name, "params": params, "version": DATA_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(name: str, params: dict, build: Callable[[], dict[str, np.ndarray]], *,
           directory: str | os.PathLike | None = None, refresh: bool = False
           ) -> tuple[dict[str, np.ndarray], Path, str]:
    """Load ``name`` built with ``params`` from the cache, or ``build()`` and store it.

    Returns (arrays, path of the .npz, content hash). ``refresh`` rebuilds regardless.
    """
    folder = cache_dir(directory)
    path = folder / f"{name}-{recipe_key(name, params)}.npz"
    if path.exists() and not refresh:
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files if k != "__hash__"}
                stored = str(f["__hash__"])
            if content_hash(arrays) == stored:
                return arrays, path, stored
            warnings.warn(f"cache file {path} failed its content hash; rebuilding", stacklevel=2)
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(f"cache file {path} is unreadable ({err}); rebuilding", stacklevel=2)
    arrays = {k: np.asarray(v) for k, v in build().items()}
    digest = content_hash(arrays)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, __hash__=np.array(digest), **arrays)
    os.replace(tmp, path)
    return arrays, path, digest
