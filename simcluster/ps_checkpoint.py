"""A shard's durable state: checkpoints plus a write-ahead log, so an acknowledged push survives.

::

    shard s                                   <dir>/shard<s>/
      Push / Commit arrives
      1 log it: append [len|sha256|pickle] -> wal-<n0>.log   (flushed and fsynced)
      2 apply it (ShardState.push / commit)
      3 only now send the Ack                 (acknowledgement follows persistence)
      every `every` logged messages:
      4 checkpoint                          -> ckpt-<n>.npz  (atomic, checksummed), new wal-<n>.log;
                                               only the newest `keep` checkpoints and their logs stay

**Restore** (:meth:`ShardStore.restore`): read the newest checkpoint whose checksum verifies (a
corrupted one is reported and the previous one used), then replay, in order, every logged
message after it through the same :class:`~simcluster.ps.ShardState` rules. The rules are
deterministic, so the restored state is the state the shard had when it died: its version is
the checkpoint's version plus every update acknowledged after it, and no acknowledged update is
lost. A torn last record (the shard died while appending it) was never acknowledged; it is
detected by its checksum and dropped.

Checkpoint entries are plain arrays (refimpl.checkpoint's approach and :func:`checksum`): the
values, the optimiser state, the buffered sync pushes, and a JSON entry with the version, the
log position and the bookkeeping (acks by (replica, seq), counters, quarantine).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from refimpl.checkpoint import checksum, write_npz_atomically

from .ps import ShardSpec, ShardState
from .ps_messages import Ack, Push

FORMAT = "catneuron-shard/1"
_RECORD = struct.Struct("!Q32s")  # payload length, SHA-256 of the payload


def _state_arrays(state: ShardState, n: int) -> dict:
    meta = {"version": state.version, "n": n,
            "acks": [list(a.__dict__.values()) for a in state.acks.values()],
            "committed": sorted(state.committed.items()),
            "nonfinite": sorted(state.nonfinite.items()), "quarantined": sorted(state.quarantined),
            "staleness": sorted(state.staleness.items()), "counts": sorted(state.counts.items())}
    arrays = {"meta": np.array(json.dumps(meta)), "values": state.values}
    arrays.update({f"opt/{k}": v for k, v in state.opt.items()})
    for step, by in state.buffer.items():
        arrays.update({f"buffer/{step}/{r}": g for r, g in by.items()})
    arrays["__format__"] = np.array(FORMAT)
    return arrays


def _state_from_arrays(spec: ShardSpec, arrays: dict) -> tuple[ShardState, int]:
    meta = json.loads(str(arrays["meta"]))
    state = ShardState(spec)
    state.params["w"][...] = arrays["values"]
    for k in state.opt:
        state.opt[k][...] = arrays[f"opt/{k}"]
    state.version = meta["version"]
    state.acks = {(a[1], a[2]): Ack(*a) for a in meta["acks"]}
    state.committed = {int(s): v for s, v in meta["committed"]}
    state.nonfinite = Counter({int(r): c for r, c in meta["nonfinite"]})
    state.quarantined = set(meta["quarantined"])
    state.staleness = Counter({int(s): c for s, c in meta["staleness"]})
    state.counts = Counter(dict(meta["counts"]))
    for name, g in arrays.items():
        if name.startswith("buffer/"):
            _, step, r = name.split("/")
            state.buffer.setdefault(int(step), {})[int(r)] = np.array(g)
    return state, meta["n"]


class ShardStore:
    """Checkpoints and write-ahead log of one shard in ``directory/shard<s>`` (module docstring)."""

    def __init__(self, directory, shard: int, *, every: int = 20, keep: int = 2):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1 (logged messages per checkpoint), got {every!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
            raise ValueError(f"keep must be an int >= 2 (so a corrupted checkpoint has a fallback), got {keep!r}")
        self.dir = Path(directory) / f"shard{shard}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.every, self.keep = every, keep
        self.n = 0  # messages logged so far (the log position)
        self._wal = None
        self.last_restore: dict = {}

    # -- names ----------------------------------------------------------------------------------

    def checkpoints(self) -> list[int]:
        """Log positions of the checkpoints on disk, oldest first."""
        return sorted(int(p.stem.split("-")[1]) for p in self.dir.glob("ckpt-*.npz"))

    def _ckpt(self, n: int) -> Path:
        return self.dir / f"ckpt-{n:08d}.npz"

    def _log(self, n: int) -> Path:
        return self.dir / f"wal-{n:08d}.log"

    # -- writing --------------------------------------------------------------------------------

    def checkpoint(self, state: ShardState) -> Path:
        """Write the state atomically (temporary file, fsync, rename), start a new log segment,
        and remove checkpoints (and their logs) beyond the newest ``keep``."""
        arrays = _state_arrays(state, self.n)
        arrays["__sha256__"] = np.array(checksum(arrays))
        path = write_npz_atomically(self._ckpt(self.n), arrays)
        self._open_log(self.n)
        for old in self.checkpoints()[:-self.keep]:
            self._ckpt(old).unlink(missing_ok=True)
            self._log(old).unlink(missing_ok=True)
        return path

    def _open_log(self, n: int) -> None:
        if self._wal is not None:
            self._wal.close()
        self._wal = open(self._log(n), "ab")

    def log(self, msg) -> None:
        """Append one Push or Commit durably (before it is applied and acknowledged)."""
        if self._wal is None:
            self._open_log(self.n)
        payload = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        self._wal.write(_RECORD.pack(len(payload), hashlib.sha256(payload).digest()) + payload)
        self._wal.flush()
        os.fsync(self._wal.fileno())
        self.n += 1

    def handle(self, state: ShardState, msg):
        """Log ``msg``, apply it to ``state``, checkpoint when due; returns the reply (Ack, or the
        version after a Commit)."""
        self.log(msg)
        out = state.push(msg) if isinstance(msg, Push) else state.commit(msg.step, msg.replicas)
        if self.n % self.every == 0:
            self.checkpoint(state)
        return out

    def close(self) -> None:
        if self._wal is not None:
            self._wal.close()
            self._wal = None

    # -- reading --------------------------------------------------------------------------------

    def _read_checkpoint(self, n: int) -> dict:
        path = self._ckpt(n)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path} is not readable: {err}") from None
        stored = str(arrays.pop("__sha256__", ""))
        if str(arrays.get("__format__", "")) != FORMAT or checksum(arrays) != stored:
            raise ValueError(f"{path} is corrupted: its SHA-256 checksum does not match")
        return arrays

    def _records(self, n: int):
        """The logged messages of segment ``n``, stopping at a torn or corrupted record."""
        path = self._log(n)
        if not path.exists():
            return [], False
        data = path.read_bytes()
        out, off = [], 0
        while off + _RECORD.size <= len(data):
            size, digest = _RECORD.unpack_from(data, off)
            payload = data[off + _RECORD.size: off + _RECORD.size + size]
            if len(payload) < size or hashlib.sha256(payload).digest() != digest:
                return out, True
            out.append(pickle.loads(payload))
            off += _RECORD.size + size
        return out, off != len(data)

    def restore(self, spec: ShardSpec) -> ShardState:
        """The shard's state from the newest good checkpoint and the log after it (a fresh
        state from ``spec`` if there is none). ``last_restore`` reports what happened."""
        report = {"checkpoint": None, "version": 0, "corrupted": [], "replayed": 0, "torn": 0}
        state, start = ShardState(spec), 0
        for n in reversed(self.checkpoints()):
            try:
                state, start = _state_from_arrays(spec, self._read_checkpoint(n))
            except ValueError as err:
                report["corrupted"].append(str(err))
                continue
            report["checkpoint"], report["version"] = n, state.version
            break
        self.n = start
        for seg in [s for s in self._segments() if s >= start]:
            records, torn = self._records(seg)
            for msg in records:
                state.push(msg) if isinstance(msg, Push) else state.commit(msg.step, msg.replicas)
                self.n += 1
                report["replayed"] += 1
            report["torn"] += int(torn)
        report["restored_version"] = state.version
        self.last_restore = report
        self.checkpoint(state)  # a fresh, good checkpoint of what was recovered
        return state

    def _segments(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.dir.glob("wal-*.log"))
