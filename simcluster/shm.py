"""Shared-memory segments for bulk arrays: per-link pools of reusable segments, and one-off ones.

::

    sender (node 3)                        /dev/shm                        receiver (node 7)
    SegmentPool.park(a, dst=7) --write--> cn<run>_3_7_p2  [flag|data] <--map once-- SegmentMaps.open(ref)
      finds a slot whose flag is 0,        flag 1 = full, 0 = free           returns a view of data;
      copies a in, sets flag 1                                               when the last view of it
                                                                             is freed, flag <- 0

**Why pools.** Fresh pages are expensive: on this machine a copy into newly allocated memory
runs at ~0.3 GB/s where a copy into memory already touched runs at several GB/s. So each sender
keeps up to ``max_per_link`` segments per destination and reuses them, and the receiver maps
each one once and hands out a **view** of it (no copy at all on the receiving side).

**Who may touch a slot.** The first byte of a pooled segment is a flag with one writer per
transition: the sender sets it to 1 after writing the data; the receiver sets it back to 0 when
the array it handed out (and every view of it) has been garbage collected (``weakref.finalize``
on the bottom array of the view chain). No lock is ever held, so a process that dies mid-write
blocks nobody: its slot simply stays full.

**One-off segments** (the pool of a link is full, or the array is bigger than any slot) are
created for one message and unlinked by the receiver as soon as it has mapped them; their memory
is returned when the array is freed. Names carry writer and reader
(``cn<run>_<writer>_<reader>_<k>``, ``..._p<k>`` for pooled slots) so the group can remove what
a dead reader will never read, and everything of a run at shutdown (:func:`sweep`).
"""

from __future__ import annotations

import mmap
import os
import signal
import weakref
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from .messages import ShmArray

SHM_PREFIX = "cn"
SHM_DIR = "/dev/shm"
HEADER = 64  # bytes before the data of a pooled slot (byte 0 = the flag); keeps data aligned
MIN_SLOT = 1 << 16


def segment_prefix(run_id: str) -> str:
    return f"{SHM_PREFIX}{run_id}_"


def sweep(run_id: str, reader: int | None = None) -> list[str]:
    """Unlink the shared-memory segments of run ``run_id`` still in /dev/shm (only those addressed
    to node ``reader``, if given: nobody else will read them once it is dead); return their names."""
    prefix = segment_prefix(run_id)
    removed = []
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return removed
    for name in names:
        if name.startswith(prefix) and (reader is None or name.split("_")[-2] == str(reader)):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed.append(name)
            except FileNotFoundError:
                pass
    return removed


def _create(name: str, size: int) -> shared_memory.SharedMemory:
    shm = shared_memory.SharedMemory(name=name, create=True, size=size)
    # Python < 3.13 registers every segment with the resource tracker, which would unlink it when
    # this process exits (or warn). Lifetimes are managed here and by sweep().
    resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001 (no public API before 3.13)
    return shm


class SegmentPool:
    """The sender's side: parks arrays in pooled slots (or one-off segments) for a destination."""

    def __init__(self, run_id: str, node: int, max_per_link: int = 8):
        self.prefix = f"{segment_prefix(run_id)}{node}_"
        self.max_per_link = max_per_link
        self.slots: dict[int, list[shared_memory.SharedMemory]] = {}
        self.count = 0

    def park(self, a: np.ndarray, dst: int, die_mid_write: bool = False) -> ShmArray:
        """Copy ``a`` into shared memory for node ``dst``; the reference to send instead of it."""
        if not die_mid_write:
            slot = self._free_slot(dst, a.nbytes)
            if slot is not None:
                np.ndarray(a.shape, a.dtype, buffer=slot.buf, offset=HEADER)[...] = a
                slot.buf[0] = 1  # full: the receiver owns it until its array is freed
                return ShmArray(slot.name.lstrip("/"), tuple(a.shape), a.dtype.str, int(a.nbytes), HEADER)
        shm = self._create_next(f"{self.prefix}{dst}_{{}}", max(a.nbytes, 1))
        try:
            view = np.ndarray(a.shape, dtype=a.dtype, buffer=shm.buf)
            if die_mid_write:  # the fault plan's crash: die with a half-written segment
                view.reshape(-1)[: a.size // 2] = a.reshape(-1)[: a.size // 2]
                os.kill(os.getpid(), signal.SIGKILL)
            view[...] = a
            del view
        finally:
            shm.close()
        return ShmArray(shm.name.lstrip("/"), tuple(a.shape), a.dtype.str, int(a.nbytes), 0)

    def _free_slot(self, dst: int, nbytes: int):
        slots = self.slots.setdefault(dst, [])
        for slot in slots:
            if slot.buf[0] == 0 and slot.size - HEADER >= nbytes:
                return slot
        if len(slots) >= self.max_per_link:  # retire a free slot that is too small, if any
            small = next((x for x in slots if x.buf[0] == 0), None)
            if small is None:
                return None
            slots.remove(small)
            small.close()
            try:  # (not small.unlink(): that would also unregister it from the tracker, again)
                os.unlink(os.path.join(SHM_DIR, small.name))
            except FileNotFoundError:
                pass  # swept already
            # the receiver's mapping of it is dropped by SegmentMaps' bound
        capacity = max(MIN_SLOT, 1 << (max(nbytes, 1) - 1).bit_length())  # next power of two
        slot = self._create_next(f"{self.prefix}{dst}_p{{}}", HEADER + capacity)
        slots.append(slot)
        return slot

    def _create_next(self, pattern: str, size: int) -> shared_memory.SharedMemory:
        """A new segment named ``pattern.format(k)`` for the next free k (a restarted process
        must not collide with the names its predecessor left behind)."""
        while True:
            self.count += 1
            try:
                return _create(pattern.format(self.count), size)
            except FileExistsError:
                continue

    def forget(self, dst: int) -> None:
        """Drop the slots for ``dst`` (it died; the group removes their names): a restarted
        ``dst`` gets fresh slots."""
        for slot in self.slots.pop(dst, []):
            slot.close()
            try:
                os.unlink(os.path.join(SHM_DIR, slot.name.lstrip("/")))
            except FileNotFoundError:
                pass  # swept already

    def close(self) -> None:
        for slots in self.slots.values():
            for slot in slots:
                slot.close()  # the names stay until the group's sweep: a reader may still map them
        self.slots.clear()


def _release(mapping: mmap.mmap) -> None:
    if not mapping.closed:
        mapping[0] = 0  # free: the sender may reuse the slot


class SegmentMaps:
    """The receiver's side: maps segments and returns the arrays in them, without copying."""

    def __init__(self, max_maps: int = 64):
        self.maps: dict[str, mmap.mmap] = {}  # pooled slots, mapped once (oldest first)
        self.max_maps = max_maps

    def open(self, ref: ShmArray) -> np.ndarray:
        pooled = ref.offset > 0
        mapping = self.maps.get(ref.name) if pooled else None
        if mapping is None:
            path = os.path.join(SHM_DIR, ref.name)
            fd = os.open(path, os.O_RDWR)  # FileNotFoundError: the caller names the segment
            try:
                mapping = mmap.mmap(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            if pooled:
                self._forget_idle()
                self.maps[ref.name] = mapping
            else:
                os.unlink(path)  # one-off: the name goes now, the memory with the array
        dtype = np.dtype(ref.dtype)
        flat = np.frombuffer(mapping, dtype=dtype, count=ref.nbytes // dtype.itemsize, offset=ref.offset)
        if pooled:  # every view of it has ``flat`` as its base: free the slot when all are gone
            weakref.finalize(flat, _release, mapping)
        return flat.reshape(ref.shape)

    def _forget_idle(self) -> None:
        """Keep at most ``max_maps`` mappings: unmap the oldest free ones (slots that senders
        retired are never opened again; their memory returns when they are unmapped)."""
        for name in list(self.maps):
            if len(self.maps) < self.max_maps:
                return
            mapping = self.maps[name]
            if mapping[0] == 0:  # no array of ours lives in it
                del self.maps[name]
                try:
                    mapping.close()
                except BufferError:  # pragma: no cover - a view still exists after all
                    self.maps[name] = mapping
