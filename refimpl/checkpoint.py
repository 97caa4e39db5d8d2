"""Checkpoints: one ``.npz`` holding everything a run needs to continue bit for bit.

Entries (all plain arrays, loadable with ``allow_pickle=False``)::

    __format__        "catneuron-checkpoint/1"
    __sha256__        SHA-256 over every other entry (name, dtype, shape and bytes, sorted by name)
    config            the ModelConfig as JSON
    step              optimiser steps done
    rng               the training Generator's bit_generator.state as JSON
    param/<key>       the weights, keys as refimpl.model ("stage0.W1", ...)
    opt/<key>         the optimiser state (Adagrad's sums; SGD has none)
    preprocess/<name> the input whitening fitted on the training frames (if any)

Writing is atomic: the file is written to a temporary file in the same directory, flushed and
fsynced, then moved over the target with ``os.replace``; a crash mid-write leaves the previous
checkpoint in place. Reading verifies the format and the checksum: a truncated, corrupted or
foreign file is a ``ValueError`` that says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .backend import to_numpy
from .config import ModelConfig, config_from_dict, config_to_dict

FORMAT = "catneuron-checkpoint/1"


class Checkpoint(NamedTuple):
    config: ModelConfig
    step: int
    params: dict  # key -> (OH, OW, K, C, R, R)
    opt_state: dict  # key -> array like params (empty for SGD)
    rng_state: dict  # a bit_generator.state
    preprocess: dict  # name -> array (refimpl.preprocess.to_arrays), {} for none

    def rng(self) -> np.random.Generator:
        """A Generator in exactly the saved state."""
        return restore_rng(self.rng_state)


def restore_rng(state: dict) -> np.random.Generator:
    """A Generator whose bit generator (named in ``state``) is set to ``state``."""
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 hex digest of named arrays: name, dtype, shape and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.reshape(-1).view(np.uint8))  # the raw bytes, without a copy
    return h.hexdigest()


def save_checkpoint(path, *, config: ModelConfig, step: int, params: dict, opt_state: dict,
                    rng: np.random.Generator, preprocess: dict | None = None) -> Path:
    """Write a checkpoint atomically to ``path`` (should end in ``.npz``); return the path."""
    path = Path(path)
    arrays = {
        "config": np.array(json.dumps(config_to_dict(config))),
        "step": np.array(int(step)),
        "rng": np.array(json.dumps(rng.bit_generator.state)),
    }
    arrays.update({f"param/{k}": to_numpy(v) for k, v in params.items()})
    arrays.update({f"opt/{k}": to_numpy(v) for k, v in opt_state.items()})
    arrays.update({f"preprocess/{k}": np.asarray(v) for k, v in (preprocess or {}).items()})
    arrays["__format__"] = np.array(FORMAT)
    arrays["__sha256__"] = np.array(checksum(arrays))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_npz_atomically(path, arrays)


def write_npz_atomically(path: Path, arrays: dict) -> Path:
    """Write ``arrays`` to ``path`` (.npz) so that a crash leaves the old file or the new one,
    never half of one: a temporary file beside it, fsync, rename over it, fsync the directory."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path) -> Checkpoint:
    """Read and verify a checkpoint. ``ValueError`` for a truncated, corrupted or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        raise ValueError(f"checkpoint {path} is not a readable .npz file (truncated or not a "
                         f"checkpoint): {err}") from None
    fmt = arrays.pop("__format__", None)
    if fmt is None or str(fmt) != FORMAT:
        raise ValueError(f"checkpoint {path} is not a catneuron checkpoint (format "
                         f"{None if fmt is None else str(fmt)!r}, expected {FORMAT!r})")
    stored = str(arrays.pop("__sha256__", ""))
    arrays["__format__"] = fmt
    if checksum(arrays) != stored:
        raise ValueError(f"checkpoint {path} is corrupted: its SHA-256 checksum does not match "
                         f"its contents")
    config = config_from_dict(json.loads(str(arrays["config"])))

    def group(prefix):
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    return Checkpoint(config, int(arrays["step"]), group("param/"), group("opt/"),
                      json.loads(str(arrays["rng"])), group("preprocess/"))
