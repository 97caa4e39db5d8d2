"""Device discovery, the backend switch and the host <-> device transfers at the boundaries.

Which array backend a process computes with is decided once, from ``--device`` or the
``CATNEURON_DEVICE`` environment variable (the flag wins; the default is ``cpu``):

    ========  ======================  ===========================================================
    device    namespace ``xp``        for
    ========  ======================  ===========================================================
    cpu       ``numpy``               the reference, everywhere
    cuda      ``cupy``                one CUDA device: the first visible one (placement pins a
                                      process to one GPU with ``CUDA_VISIBLE_DEVICES``)
    strict    :mod:`gpu.strict`       the CuPy stand-in on the CPU, for tests: every implicit
                                      host <-> device conversion raises ``TypeError``
    ========  ======================  ===========================================================

refimpl never asks which device it is on: it takes ``xp = get_xp(x)`` from its inputs, so it runs
wherever its arrays live. A caller therefore only moves arrays, at the boundaries, e.g. train::

    xp = select_backend(args.device)            # None -> CATNEURON_DEVICE -> "cpu"
    params = to_device(params, xp)              # {"W1": ..., "W2": ...} host -> device, once
    for batch in batches:                       # the data loader yields host (NumPy) arrays
        x = to_device(batch, xp)
        J, cache = objective_forward(x, params, ...)
        dx, grads = objective_backward(1.0, cache)
        ...                                     # the update stays on the device
    save_checkpoint(to_host(params))            # device -> host at the end, or to send to a shard

Nothing here imports CuPy at module level: ``import gpu`` works without CuPy and without a GPU.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from refimpl.backend import to_numpy

DEVICES = ("cpu", "cuda", "strict")
ENV_VAR = "CATNEURON_DEVICE"
INSTALL_HINT = "install CuPy with `pip install -e '.[gpu]'` (cupy-cuda12x; cupy-cuda13x for CUDA 13)"


class DeviceUnavailable(ValueError):
    """``cuda`` was asked for but CuPy or a CUDA device is missing (a ValueError, so the CLI
    prints it as a one-line error)."""


class CudaStatus(NamedTuple):
    available: bool
    reason: str  # why not, or how many devices
    cupy_version: str | None  # None when CuPy is not installed
    device_count: int


class DeviceInfo(NamedTuple):
    index: int  # as the process sees it (after CUDA_VISIBLE_DEVICES)
    name: str
    compute_capability: str  # "8.6"
    total_bytes: int
    free_bytes: int


def resolve_device(device: str | None = None, env=None) -> str:
    """The device name from ``--device`` (if not None), else ``CATNEURON_DEVICE``, else ``cpu``.

    Raises ValueError naming the flag or the variable when the value is not one of DEVICES.
    """
    env = os.environ if env is None else env
    if device is not None:
        source, value = "--device", device
    elif env.get(ENV_VAR, "").strip():
        source, value = ENV_VAR, env[ENV_VAR]
    else:
        return "cpu"
    if not isinstance(value, str):
        raise TypeError(f"{source} must be a string, one of {list(DEVICES)}, got {type(value).__name__}")
    name = value.strip().lower()
    if name not in DEVICES:
        raise ValueError(
            f"{source} must be one of cpu, cuda (or strict, the CuPy stand-in for tests), got {value!r}"
        )
    return name


def cuda_status() -> CudaStatus:
    """Is CuPy importable and does CUDA see a device? Never raises; says why not."""
    try:
        import cupy
    except Exception as err:  # ImportError, or a broken install of the CUDA libraries
        return CudaStatus(False, f"CuPy is not installed or does not import ({err}); {INSTALL_HINT}", None, 0)
    version = str(cupy.__version__)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    pinned = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as err:  # cupy's CUDARuntimeError: no driver, no device
        return CudaStatus(False, f"CuPy {version} is installed but CUDA finds no usable device{pinned}: {err}",
                          version, 0)
    if count < 1:
        return CudaStatus(False, f"CuPy {version} is installed but CUDA reports 0 devices{pinned}", version, 0)
    return CudaStatus(True, f"{count} CUDA device(s) visible{pinned}", version, count)


def device_info() -> list[DeviceInfo]:
    """Name, compute capability and memory of every visible CUDA device ([] without CUDA)."""
    status = cuda_status()
    if not status.available:
        return []
    import cupy

    infos = []
    for i in range(status.device_count):
        props = cupy.cuda.runtime.getDeviceProperties(i)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        with cupy.cuda.Device(i):
            free, total = cupy.cuda.runtime.memGetInfo()
        infos.append(DeviceInfo(i, name, f"{props['major']}.{props['minor']}", int(total), int(free)))
    return infos


def select_backend(device: str | None = None):
    """The array namespace ``xp`` for ``device`` (resolved as in :func:`resolve_device`).

    ``cpu`` -> numpy, ``cuda`` -> cupy, ``strict`` -> :mod:`gpu.strict`. Raises
    :class:`DeviceUnavailable` when ``cuda`` is asked for and CuPy or a device is missing.
    """
    name = resolve_device(device)
    if name == "cpu":
        return np
    if name == "strict":
        from . import strict

        return strict
    status = cuda_status()
    if not status.available:
        raise DeviceUnavailable(
            f"device 'cuda' was asked for (--device or {ENV_VAR}) but {status.reason}. "
            f"Use --device cpu, or unset {ENV_VAR}"
        )
    import cupy

    return cupy


def _is_array(a) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype") and not isinstance(a, np.generic)


def to_device(a: Any, xp):
    """Host -> the device of namespace ``xp`` (a copy unless ``xp`` is numpy).

    ``a``: an array, or a dict of arrays (parameters, gradients), converted value by value;
    ``None`` and Python or NumPy scalars pass through. An array already on a device is moved
    to the host first when ``xp`` is numpy, and left as it is when it is already ``xp``'s.
    """
    if isinstance(a, dict):
        return {k: to_device(v, xp) for k, v in a.items()}
    if a is None or isinstance(a, (bool, int, float, np.generic)):
        return a
    if not _is_array(a):
        raise TypeError(f"to_device: a must be an array or a dict of arrays, got {type(a).__name__}")
    if xp is np:
        return to_numpy(a)
    return xp.asarray(a)


def to_host(a: Any):
    """Device -> host NumPy array (a no-op for NumPy arrays); dicts value by value, scalars as
    they are. The only way data leaves a device: use it at the boundaries (checkpoints, the
    parameter-server messages, metrics)."""
    if isinstance(a, dict):
        return {k: to_host(v) for k, v in a.items()}
    if a is None or isinstance(a, (bool, int, float, np.generic)):
        return a
    if not _is_array(a):
        raise TypeError(f"to_host: a must be an array or a dict of arrays, got {type(a).__name__}")
    return to_numpy(a)
