"""Keep freed memory in the process for the next step, instead of handing it back to the OS.

A training step allocates and frees the same large temporaries every time (patch strips,
products, caches). glibc's ``malloc`` serves blocks above a threshold (128 KiB at first, adjusted
as the program runs) with ``mmap`` and returns them with ``munmap`` when they are freed, and trims
the top of its heap once more than 128 KiB is free there. Each new step then touches fresh pages
again, and every first touch is a page fault, which is expensive on the 2-core virtual
machines here (tests/test_memory.py shows the block going back to the OS, and staying).

:func:`retain_freed_memory` raises both thresholds, with ``mallopt``, so the blocks one step
frees are reused by the next. The process keeps its peak heap for its lifetime, which a worker
that runs step after step does anyway. It is a no-op where the C library is not glibc.
The same can be had without code by starting Python with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` in its environment (glibc's own variables).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses larger mmap thresholds on 64-bit machines
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of free heap before trimming

_DONE: bool | None = None


def retain_freed_memory() -> bool:
    """Set glibc's mmap threshold to 32 MiB and its trim threshold to 1 GiB, once per process.

    Returns True if the settings took effect (glibc), False otherwise. Blocks larger than
    32 MiB are still mapped and unmapped one by one.
    """
    global _DONE
    if _DONE is None:
        _DONE = _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and _mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return _DONE


def _mallopt(param: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(param, value) == 1
